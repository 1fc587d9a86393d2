//! Typed hook points (TransformerLens names), activation capture and interventions.
//!
//! Within block ℓ (pre-norm transformer):
//! ```text
//! resid_pre(ℓ)  = resid_post(ℓ−1)            (resid_pre(0) = hook_embed)
//! attn_out(ℓ)   = Attn(norm(resid_pre(ℓ)))
//! resid_mid(ℓ)  = resid_pre(ℓ) + attn_out(ℓ)
//! mlp_out(ℓ)    = MLP(norm(resid_mid(ℓ)))
//! resid_post(ℓ) = resid_mid(ℓ) + mlp_out(ℓ)
//! ln_final.hook_normalized = norm(resid_post(L−1))
//! ```
//! Interventions at a hook replace its value before anything downstream (including a capture
//! of the same hook) reads it.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use candle_core::{Tensor, D};

/// A 0-based block index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Layer(pub usize);

/// A point in the forward pass where the residual stream (or a block output) can be read or
/// changed. Every hook carries a `[positions, d_model]` activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// Token embeddings (after any architecture scaling): `hook_embed`.
    Embed,
    /// Input of block ℓ: `blocks.ℓ.hook_resid_pre`.
    ResidPre(Layer),
    /// After attention, before the MLP: `blocks.ℓ.hook_resid_mid`.
    ResidMid(Layer),
    /// Output of block ℓ: `blocks.ℓ.hook_resid_post`.
    ResidPost(Layer),
    /// Attention output added to the residual: `blocks.ℓ.hook_attn_out`.
    AttnOut(Layer),
    /// MLP output added to the residual: `blocks.ℓ.hook_mlp_out`.
    MlpOut(Layer),
    /// Final norm output, the unembedding's input: `ln_final.hook_normalized`.
    LnFinal,
}

/// The per-layer hook kinds, for patterns such as `blocks.*.hook_resid_post`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerHook {
    /// `hook_resid_pre`.
    ResidPre,
    /// `hook_resid_mid`.
    ResidMid,
    /// `hook_resid_post`.
    ResidPost,
    /// `hook_attn_out`.
    AttnOut,
    /// `hook_mlp_out`.
    MlpOut,
}

impl LayerHook {
    /// The hook of this kind at `layer`.
    pub fn at(self, layer: Layer) -> HookPoint {
        match self {
            LayerHook::ResidPre => HookPoint::ResidPre(layer),
            LayerHook::ResidMid => HookPoint::ResidMid(layer),
            LayerHook::ResidPost => HookPoint::ResidPost(layer),
            LayerHook::AttnOut => HookPoint::AttnOut(layer),
            LayerHook::MlpOut => HookPoint::MlpOut(layer),
        }
    }

    fn name(self) -> &'static str {
        match self {
            LayerHook::ResidPre => "hook_resid_pre",
            LayerHook::ResidMid => "hook_resid_mid",
            LayerHook::ResidPost => "hook_resid_post",
            LayerHook::AttnOut => "hook_attn_out",
            LayerHook::MlpOut => "hook_mlp_out",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        [
            LayerHook::ResidPre,
            LayerHook::ResidMid,
            LayerHook::ResidPost,
            LayerHook::AttnOut,
            LayerHook::MlpOut,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }
}

impl HookPoint {
    /// The block this hook belongs to, if any.
    pub fn layer(self) -> Option<Layer> {
        self.split().map(|(_, l)| l)
    }

    /// Kind and layer of a per-layer hook.
    pub fn split(self) -> Option<(LayerHook, Layer)> {
        match self {
            HookPoint::ResidPre(l) => Some((LayerHook::ResidPre, l)),
            HookPoint::ResidMid(l) => Some((LayerHook::ResidMid, l)),
            HookPoint::ResidPost(l) => Some((LayerHook::ResidPost, l)),
            HookPoint::AttnOut(l) => Some((LayerHook::AttnOut, l)),
            HookPoint::MlpOut(l) => Some((LayerHook::MlpOut, l)),
            HookPoint::Embed | HookPoint::LnFinal => None,
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookPoint::Embed => f.write_str("hook_embed"),
            HookPoint::LnFinal => f.write_str("ln_final.hook_normalized"),
            other => {
                let (kind, Layer(l)) = other.split().expect("per-layer hook");
                write!(f, "blocks.{l}.{}", kind.name())
            }
        }
    }
}

/// A hook name that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hook `{name}` (expected hook_embed, blocks.N.hook_{{resid_pre,resid_mid,resid_post,attn_out,mlp_out}} or ln_final.hook_normalized{extra})")]
pub struct HookParseError {
    /// The offending text.
    pub name: String,
    extra: String,
}

impl HookParseError {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            extra: String::new(),
        }
    }
}

impl FromStr for HookPoint {
    type Err = HookParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hook_embed" => return Ok(HookPoint::Embed),
            "ln_final.hook_normalized" => return Ok(HookPoint::LnFinal),
            _ => {}
        }
        let rest = s
            .strip_prefix("blocks.")
            .ok_or_else(|| HookParseError::new(s))?;
        let (layer, hook) = rest.split_once('.').ok_or_else(|| HookParseError::new(s))?;
        let layer: usize = layer
            .parse()
            .ok()
            .filter(|_| layer.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| HookParseError::new(s))?;
        let kind = LayerHook::from_name(hook).ok_or_else(|| HookParseError::new(s))?;
        Ok(kind.at(Layer(layer)))
    }
}

/// Parses a comma-separated list of hook names where `blocks.*.hook_X` expands to every layer
/// `0..n_layers` and ranges `blocks.2-5.hook_X` to layers 2..=5. Duplicates are removed and
/// the order of first appearance kept.
///
/// # Errors
/// [`HookParseError`] naming the bad item, including a layer `>= n_layers`.
pub fn parse_hook_list(list: &str, n_layers: usize) -> Result<Vec<HookPoint>, HookParseError> {
    let mut out = Vec::new();
    let push = |h: HookPoint, out: &mut Vec<HookPoint>| {
        if !out.contains(&h) {
            out.push(h);
        }
    };
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let too_deep = |l: usize| HookParseError {
            name: item.into(),
            extra: format!("; the model has layers 0..{n_layers}, got {l}"),
        };
        let layers_spec = item
            .strip_prefix("blocks.")
            .and_then(|r| r.split_once('.'))
            .filter(|(l, _)| *l == "*" || l.contains('-'));
        if let Some((spec, hook)) = layers_spec {
            let kind = LayerHook::from_name(hook).ok_or_else(|| HookParseError::new(item))?;
            let (lo, hi) = if spec == "*" {
                (0, n_layers.saturating_sub(1))
            } else {
                let (a, b) = spec.split_once('-').expect("contains '-'");
                let p = |x: &str| x.parse::<usize>().map_err(|_| HookParseError::new(item));
                (p(a)?, p(b)?)
            };
            if n_layers == 0 || hi >= n_layers {
                return Err(too_deep(hi));
            }
            for l in lo..=hi {
                push(kind.at(Layer(l)), &mut out);
            }
        } else {
            let h: HookPoint = item.parse()?;
            if let Some(Layer(l)) = h.layer() {
                if l >= n_layers {
                    return Err(too_deep(l));
                }
            }
            push(h, &mut out);
        }
    }
    Ok(out)
}

/// Which positions of each sequence (of the tokens fed in one forward call) to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Positions {
    /// Every (non-padding) position.
    All,
    /// The last position only.
    Last,
    /// These positions (0-based within the tokens of the call; out-of-range ones are an error).
    Indices(Vec<usize>),
}

impl Positions {
    /// The positions selected in a sequence of `len` tokens, or the first bad index.
    pub fn resolve(&self, len: usize) -> Result<Vec<usize>, usize> {
        match self {
            Positions::All => Ok((0..len).collect()),
            Positions::Last => Ok(len.checked_sub(1).into_iter().collect()),
            Positions::Indices(ix) => match ix.iter().find(|&&i| i >= len) {
                Some(&bad) => Err(bad),
                None => Ok(ix.clone()),
            },
        }
    }
}

/// A request to record activations, and the records.
///
/// `Capture::none()` records nothing and costs nothing. Records are f32 `[positions, d_model]`
/// per hook and per sequence of the batch; successive forward calls (prefill, then decode
/// steps) append along the position axis.
#[derive(Debug, Clone)]
pub struct Capture {
    hooks: Vec<HookPoint>,
    positions: Positions,
    /// hook → per sequence → chunks of `[n, d_model]`.
    records: HashMap<HookPoint, Vec<Vec<Tensor>>>,
}

impl Capture {
    /// Records nothing.
    pub fn none() -> Self {
        Self {
            hooks: Vec::new(),
            positions: Positions::All,
            records: HashMap::new(),
        }
    }

    /// Records `hooks` at `positions`.
    pub fn new(hooks: impl IntoIterator<Item = HookPoint>, positions: Positions) -> Self {
        let mut c = Self::none();
        for h in hooks {
            if !c.hooks.contains(&h) {
                c.hooks.push(h);
            }
        }
        c.positions = positions;
        c
    }

    /// The hooks requested, in request order.
    pub fn hooks(&self) -> &[HookPoint] {
        &self.hooks
    }

    /// The position rule.
    pub fn positions(&self) -> &Positions {
        &self.positions
    }

    /// Whether `hook` is requested.
    pub fn wants(&self, hook: HookPoint) -> bool {
        self.hooks.contains(&hook)
    }

    /// The position rule, when anything is requested.
    pub fn positions_if_any(&self) -> Option<&Positions> {
        (!self.hooks.is_empty()).then_some(&self.positions)
    }

    /// Whether nothing is requested.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Appends a record `[n, d_model]` for sequence `seq` of the batch.
    pub(crate) fn push(&mut self, hook: HookPoint, seq: usize, t: Tensor) {
        let per_seq = self.records.entry(hook).or_default();
        if per_seq.len() <= seq {
            per_seq.resize_with(seq + 1, Vec::new);
        }
        per_seq[seq].push(t);
    }

    /// The record of `hook` for sequence `seq`: f32 `[positions, d_model]`, all forward calls
    /// concatenated; `None` when not requested or not yet run.
    ///
    /// # Errors
    /// Only a candle error when concatenating chunks.
    pub fn get(&self, hook: HookPoint, seq: usize) -> candle_core::Result<Option<Tensor>> {
        match self.records.get(&hook).and_then(|s| s.get(seq)) {
            None => Ok(None),
            Some(chunks) if chunks.is_empty() => Ok(None),
            Some(chunks) if chunks.len() == 1 => Ok(Some(chunks[0].clone())),
            Some(chunks) => Tensor::cat(chunks, 0).map(Some),
        }
    }

    /// Drops all records, keeping the request.
    pub fn clear(&mut self) {
        self.records.clear();
    }
}

/// A change to the activation at a hook, applied at every position of every sequence.
#[derive(Debug, Clone)]
pub enum Intervention {
    /// `x ← x + scale · vector` (steering / control vectors).
    Add {
        /// Where.
        at: HookPoint,
        /// `[d_model]` f32.
        vector: Tensor,
        /// Multiplier.
        scale: f32,
    },
    /// `x ← x − (x·d̂) d̂`: removes the component along a direction (directional ablation).
    Ablate {
        /// Where.
        at: HookPoint,
        /// `[d_model]` f32, unit norm (see [`Intervention::ablate`]).
        direction: Tensor,
    },
}

impl Intervention {
    /// An addition of `scale · vector` at `at`.
    pub fn add(at: HookPoint, vector: Tensor, scale: f32) -> Self {
        Intervention::Add { at, vector, scale }
    }

    /// An ablation of `direction` (normalised here) at `at`.
    ///
    /// # Errors
    /// A candle error if `direction` is not a 1-D f32 tensor; an error if its norm is zero or
    /// not finite.
    pub fn ablate(at: HookPoint, direction: &Tensor) -> candle_core::Result<Self> {
        let d = direction.to_dtype(candle_core::DType::F32)?;
        let norm = d.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
        if !(norm.is_finite() && norm > 0.0) {
            candle_core::bail!("ablation direction has norm {norm}");
        }
        Ok(Intervention::Ablate {
            at,
            direction: (d / f64::from(norm))?,
        })
    }

    /// The same addition at `kind` of every layer `0..n_layers`.
    pub fn add_at_every_layer(
        kind: LayerHook,
        n_layers: usize,
        vector: &Tensor,
        scale: f32,
    ) -> Vec<Self> {
        (0..n_layers)
            .map(|l| Self::add(kind.at(Layer(l)), vector.clone(), scale))
            .collect()
    }

    /// The same ablation at `kind` of every layer `0..n_layers`.
    ///
    /// # Errors
    /// As [`Intervention::ablate`].
    pub fn ablate_at_every_layer(
        kind: LayerHook,
        n_layers: usize,
        direction: &Tensor,
    ) -> candle_core::Result<Vec<Self>> {
        let first = Self::ablate(kind.at(Layer(0)), direction)?;
        let Intervention::Ablate {
            direction: unit, ..
        } = &first
        else {
            unreachable!("ablate builds Ablate")
        };
        Ok((0..n_layers)
            .map(|l| Intervention::Ablate {
                at: kind.at(Layer(l)),
                direction: unit.clone(),
            })
            .collect())
    }

    /// Where this intervention applies.
    pub fn at(&self) -> HookPoint {
        match self {
            Intervention::Add { at, .. } | Intervention::Ablate { at, .. } => *at,
        }
    }

    /// Applies to `x` of shape `[..., d_model]`.
    ///
    /// # Errors
    /// A candle error when the vector length differs from `d_model`.
    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Intervention::Add { vector, scale, .. } => {
                let v = (vector.to_dtype(x.dtype())? * f64::from(*scale))?;
                x.broadcast_add(&v)
            }
            Intervention::Ablate { direction, .. } => {
                let d = direction.to_dtype(x.dtype())?;
                // (x · d̂) as [..., 1], then x − proj d̂.
                let proj = x.broadcast_mul(&d)?.sum_keepdim(D::Minus1)?;
                x.broadcast_sub(&proj.broadcast_mul(&d)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let all = [
            HookPoint::Embed,
            HookPoint::ResidPre(Layer(0)),
            HookPoint::ResidMid(Layer(3)),
            HookPoint::ResidPost(Layer(6)),
            HookPoint::AttnOut(Layer(11)),
            HookPoint::MlpOut(Layer(29)),
            HookPoint::LnFinal,
        ];
        for h in all {
            assert_eq!(h.to_string().parse::<HookPoint>().unwrap(), h);
        }
        assert_eq!(
            HookPoint::ResidPost(Layer(6)).to_string(),
            "blocks.6.hook_resid_post"
        );
        for bad in [
            "blocks.x.hook_resid_post",
            "blocks.1.hook_foo",
            "embed",
            "blocks.+1.hook_mlp_out",
        ] {
            assert!(bad.parse::<HookPoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_expand() {
        let hs = parse_hook_list(
            "blocks.*.hook_resid_post, hook_embed,blocks.1.hook_resid_post",
            3,
        )
        .unwrap();
        assert_eq!(
            hs,
            vec![
                HookPoint::ResidPost(Layer(0)),
                HookPoint::ResidPost(Layer(1)),
                HookPoint::ResidPost(Layer(2)),
                HookPoint::Embed
            ]
        );
        let r = parse_hook_list("blocks.1-2.hook_attn_out", 4).unwrap();
        assert_eq!(
            r,
            vec![HookPoint::AttnOut(Layer(1)), HookPoint::AttnOut(Layer(2))]
        );
        assert!(parse_hook_list("blocks.3.hook_resid_pre", 3).is_err());
        assert!(parse_hook_list("blocks.1-5.hook_resid_pre", 3).is_err());
    }

    #[test]
    fn ablation_removes_component_and_add_shifts() {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::new(&[[1f32, 2.0, 3.0], [-1.0, 0.5, 4.0]], &dev).unwrap();
        let d = Tensor::new(&[0f32, 3.0, 4.0], &dev).unwrap();
        let ab = Intervention::ablate(HookPoint::Embed, &d).unwrap();
        let y = ab.apply(&x).unwrap();
        let dots: Vec<f32> = y
            .matmul(&d.unsqueeze(1).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(dots.iter().all(|v| v.abs() < 1e-5), "{dots:?}");
        // The orthogonal part is untouched: first coordinate unchanged.
        let y0: Vec<Vec<f32>> = y.to_vec2().unwrap();
        assert_eq!(y0[0][0], 1.0);
        let add = Intervention::add(HookPoint::Embed, d.clone(), 0.5);
        let z: Vec<Vec<f32>> = add.apply(&x).unwrap().to_vec2().unwrap();
        assert_eq!(z[1], vec![-1.0, 2.0, 6.0]);
        assert!(Intervention::ablate(HookPoint::Embed, &d.zeros_like().unwrap()).is_err());
    }
}
