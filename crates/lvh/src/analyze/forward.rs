//! The forward passes of the analysis: the judge under interventions, and the activations of
//! the two responses as the judge reads them and as the model generates them.

use anyhow::{bail, Context, Result};
use lm_runtime::hooks::{Capture, HookPoint, Intervention, Layer, Positions};
use lm_runtime::model::{Batch, Model};
use lm_runtime::tokenizer::Tokenizer;

use crate::cmd::judge::LoadedJudgeModel;
use crate::constitution::Constitution;
use crate::datasets::PreferencePair;
use crate::judge::prefix::{next_token_logprobs_under, PrefixReuse};
use crate::judge::prompt::{conversation_messages, encode, Order};
use crate::judge::{JudgeError, JudgePrompter, PairScores};

/// The judge's scores of `(y1, y2) = (chosen, rejected)` under every principle of `c`, both
/// orders, with `interventions` applied at every position of every forward call. With no
/// interventions this is exactly [`crate::judge::Judge::judge_pair`].
///
/// # Errors
/// Template and model errors.
pub fn judge_pair_under(
    model: &Model,
    prompter: &JudgePrompter<'_>,
    reuse: PrefixReuse,
    c: &Constitution,
    pair: &PreferencePair,
    interventions: &[Intervention],
) -> Result<PairScores, JudgeError> {
    let mut seqs = Vec::new();
    for p in &c.effective_principles() {
        for order in [Order::FirstAsA, Order::SecondAsA] {
            seqs.push(prompter.tokens(
                c,
                &p.text,
                &pair.prompt,
                &pair.chosen,
                &pair.rejected,
                order,
            )?);
        }
    }
    let lp = next_token_logprobs_under(model, &seqs, &prompter.option_ids(), reuse, interventions)?;
    let score = |r: &Vec<f64>| r[0] - r[1];
    Ok(PairScores {
        ab: lp.iter().step_by(2).map(score).collect(),
        ba: lp.iter().skip(1).step_by(2).map(score).collect(),
    })
}

/// Length of the longest common prefix of two token sequences.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The token span `[start, end)` of the text bytes `[start_byte, end_byte)` inside `tokens`
/// (the tokenization of all of `text`): each end is the number of leading tokens that the
/// tokenization of the text before it shares with `tokens`, so a token that straddles a
/// boundary (a merged leading space) counts as inside. `None` for an empty span.
pub fn token_span(
    tokenizer: &Tokenizer,
    text: &str,
    tokens: &[u32],
    start_byte: usize,
    end_byte: usize,
) -> Option<(usize, usize)> {
    let start = common_prefix(&encode(tokenizer, &text[..start_byte]), tokens);
    let end = common_prefix(&encode(tokenizer, &text[..end_byte]), tokens);
    (end > start).then_some((start, end))
}

/// Placeholders that stand in for the responses when locating them (Unicode private use).
const SENTINELS: [&str; 2] = ["\u{E000}", "\u{E001}"];

/// Byte ranges of `response_a` and `response_b` in `text`, the judge prompt rendered with them.
/// The prompt is rendered again with a one-character placeholder for each response; everything
/// before the first placeholder is the same in both renderings, so the offsets follow from the
/// placeholders' positions and the responses' lengths, whatever else the prompt contains. `None`
/// when a placeholder does not appear exactly once or the ranges do not hold the responses (a
/// template that rewrites its inputs).
///
/// # Errors
/// Template errors.
pub fn locate_responses(
    prompter: &JudgePrompter<'_>,
    c: &Constitution,
    principle: &str,
    prompt: &str,
    text: &str,
    response_a: &str,
    response_b: &str,
) -> Result<Option<[(usize, usize); 2]>, JudgeError> {
    let [sa, sb] = SENTINELS;
    let t = prompter.render(c, principle, prompt, sa, sb)?;
    if t.matches(sa).count() != 1 || t.matches(sb).count() != 1 {
        return Ok(None);
    }
    let (pa, pb) = (t.find(sa).unwrap_or(0), t.find(sb).unwrap_or(0));
    let (a, b) = if pa < pb {
        (pa, pb - sa.len() + response_a.len())
    } else {
        (pa - sb.len() + response_b.len(), pb)
    };
    let ranges = [(a, a + response_a.len()), (b, b + response_b.len())];
    let holds = |(lo, hi): (usize, usize), r: &str| text.get(lo..hi) == Some(r);
    Ok((holds(ranges[0], response_a) && holds(ranges[1], response_b)).then_some(ranges))
}

/// Per layer, the mean `resid_post` over each token span of one sequence, in f64:
/// `out[span][k]` is the `d_model` mean at `layers[k]`.
///
/// # Errors
/// Forward-pass errors.
pub fn span_means(
    model: &Model,
    tokens: &[u32],
    layers: &[usize],
    spans: &[(usize, usize)],
) -> Result<Vec<Vec<Vec<f64>>>> {
    let hooks: Vec<HookPoint> = layers
        .iter()
        .map(|&l| HookPoint::ResidPost(Layer(l)))
        .collect();
    let mut capture = Capture::new(hooks.iter().copied(), Positions::All);
    let batch = Batch::single(tokens.to_vec()).logits_at(Positions::Indices(Vec::new()));
    model.forward(&batch, &mut capture, &[], &mut model.new_cache())?;
    let mut out = vec![Vec::with_capacity(layers.len()); spans.len()];
    for &h in &hooks {
        let rows: Vec<Vec<f32>> = capture
            .get(h, 0)?
            .with_context(|| format!("hook {h} not recorded"))?
            .to_vec2()?;
        for (s, &(lo, hi)) in spans.iter().enumerate() {
            if hi > rows.len() || lo >= hi {
                bail!(
                    "span {lo}..{hi} outside a sequence of {} tokens",
                    rows.len()
                );
            }
            let d = rows[lo].len();
            let mut acc = vec![0f64; d];
            for r in &rows[lo..hi] {
                for (a, &x) in acc.iter_mut().zip(r) {
                    *a += f64::from(x);
                }
            }
            let n = (hi - lo) as f64;
            out[s].push(acc.into_iter().map(|a| a / n).collect());
        }
    }
    Ok(out)
}

/// `δ^J = ½[(h_A − h_B)|y1 as A + (h_B − h_A)|y2 as A]` per layer: the responses as the judge
/// reads them in the judge prompt of `c`'s first principle, each the mean over its tokens, with
/// the (A)/(B) position averaged out. `None` when a response has no tokens there.
///
/// # Errors
/// Template and forward errors; a response that cannot be found in the rendered prompt.
pub fn judge_response_diff(
    m: &LoadedJudgeModel,
    prompter: &JudgePrompter<'_>,
    c: &Constitution,
    pair: &PreferencePair,
    layers: &[usize],
) -> Result<Option<Vec<Vec<f64>>>> {
    let principle = c
        .effective_principles()
        .first()
        .map(|p| p.text.clone())
        .unwrap_or_default();
    let (y1, y2) = (pair.chosen.trim(), pair.rejected.trim());
    if y1.is_empty() || y2.is_empty() {
        return Ok(None);
    }
    let mut acc: Option<Vec<Vec<f64>>> = None;
    for (a, b, sign) in [(y1, y2, 1.0), (y2, y1, -1.0)] {
        let text = prompter.render(c, &principle, &pair.prompt, a, b)?;
        let tokens = encode(&m.tokenizer, &text);
        let [ra, rb] = locate_responses(prompter, c, &principle, &pair.prompt, &text, a, b)?
            .context("cannot locate the two responses in the rendered judge prompt")?;
        let (Some(sa), Some(sb)) = (
            token_span(&m.tokenizer, &text, &tokens, ra.0, ra.1),
            token_span(&m.tokenizer, &text, &tokens, rb.0, rb.1),
        ) else {
            return Ok(None);
        };
        let means = span_means(&m.model, &tokens, layers, &[sa, sb])?;
        let acc =
            acc.get_or_insert_with(|| vec![vec![0f64; m.model.config().d_model]; layers.len()]);
        for (k, row) in acc.iter_mut().enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                *x += 0.5 * sign * (means[0][k][j] - means[1][k][j]);
            }
        }
    }
    Ok(acc)
}

/// `δ^G = h^G(y1) − h^G(y2)` per layer: each response's mean `resid_post` over its own tokens
/// after the chat-templated prompt with the generation prompt (the tokens `s_gen` scores).
/// `None` when a response has no tokens.
///
/// # Errors
/// Template and forward errors.
pub fn generation_response_diff(
    m: &LoadedJudgeModel,
    pair: &PreferencePair,
    layers: &[usize],
) -> Result<Option<Vec<Vec<f64>>>> {
    let text = m
        .format
        .render(&conversation_messages(&pair.prompt), true)
        .context("chat template")?;
    let ids = encode(&m.tokenizer, &text);
    let mut h: Vec<Vec<Vec<f64>>> = Vec::with_capacity(2);
    for y in [&pair.chosen, &pair.rejected] {
        let cont = m.tokenizer.encode(y.trim(), false);
        if cont.is_empty() {
            return Ok(None);
        }
        let seq: Vec<u32> = ids.iter().chain(&cont).copied().collect();
        let span = (ids.len(), seq.len());
        h.push(span_means(&m.model, &seq, layers, &[span])?.remove(0));
    }
    Ok(Some(
        h[0].iter()
            .zip(&h[1])
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x - y).collect())
            .collect(),
    ))
}
