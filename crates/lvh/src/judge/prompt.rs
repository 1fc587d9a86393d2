//! Judge prompts: the constitution's judge template for one principle, rendered as one user
//! turn through the model's chat template with the generation prompt, then [`ANSWER_PREFIX`],
//! so that the next token is the option letter.
//!
//! Conversations arrive either as plain text (one user turn) or as HH-RLHF transcripts
//! (`\n\nHuman: …\n\nAssistant: …\n\nHuman: …\n\nAssistant:`); [`conversation_messages`] turns
//! both into chat messages, and [`conversation_text`] into the text shown to the judge.

use lm_runtime::template::{Message, PromptFormat};
use lm_runtime::tokenizer::Tokenizer;

use super::JudgeError;
use crate::constitution::Constitution;

/// Written after the assistant header so that the next token is `A` or `B`.
pub const ANSWER_PREFIX: &str = "The better response is (";

/// The two option letters, in the order (A), (B).
pub const OPTION_LETTERS: [&str; 2] = ["A", "B"];

/// Which response is shown as (A).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// `y1` as (A), `y2` as (B).
    FirstAsA,
    /// `y2` as (A), `y1` as (B).
    SecondAsA,
}

const HUMAN: &str = "Human:";
const ASSISTANT: &str = "Assistant:";

/// The conversation as chat messages. An HH-RLHF transcript (turns introduced by
/// `\n\nHuman:` / `\n\nAssistant:`) becomes alternating `user` / `assistant` messages, the final
/// empty `Assistant:` dropped; any other text is one `user` message, trimmed.
pub fn conversation_messages(prompt: &str) -> Vec<Message> {
    let mut marks: Vec<(usize, &str)> = Vec::new();
    for marker in [HUMAN, ASSISTANT] {
        for (at, _) in prompt.match_indices(marker) {
            let before = &prompt[..at];
            if before.trim().is_empty() || before.ends_with("\n\n") {
                marks.push((at, marker));
            }
        }
    }
    marks.sort_unstable();
    if marks.first().map(|m| m.1) != Some(HUMAN) {
        return vec![Message::user(prompt.trim())];
    }
    let mut out = Vec::new();
    for (j, &(at, marker)) in marks.iter().enumerate() {
        let end = marks.get(j + 1).map_or(prompt.len(), |m| m.0);
        let content = prompt[at + marker.len()..end].trim();
        let role = if marker == HUMAN { "user" } else { "assistant" };
        if role == "assistant" && content.is_empty() && j + 1 == marks.len() {
            continue;
        }
        out.push(Message::new(role, content));
    }
    out
}

/// The conversation as the judge reads it: `User: …` / `Assistant: …` lines, one per turn.
pub fn conversation_text(prompt: &str) -> String {
    conversation_messages(prompt)
        .iter()
        .map(|m| {
            let role = if m.role == "user" {
                "User"
            } else {
                "Assistant"
            };
            format!("{role}: {}", m.content)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Tokenizes rendered prompt text: control tokens parsed, BOS prepended when the model asks for
/// it and the text does not already start with it.
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
    let mut ids = tokenizer.encode(text, false);
    if let Some(bos) = tokenizer.bos_id().filter(|_| tokenizer.adds_bos()) {
        if ids.first() != Some(&bos) {
            ids.insert(0, bos);
        }
    }
    ids
}

/// Builds and tokenizes judge prompts for one model.
#[derive(Debug)]
pub struct JudgePrompter<'a> {
    format: &'a PromptFormat,
    tokenizer: &'a Tokenizer,
    answer_prefix: String,
    option_ids: [u32; 2],
}

impl<'a> JudgePrompter<'a> {
    /// Checks that each option letter is exactly one token where the judge reads it: the
    /// tokenization of a rendered judge prompt followed by the letter must be the prompt's
    /// tokens plus one id. That id is the one scored.
    ///
    /// # Errors
    /// [`JudgeError::OptionNotSingleToken`], [`JudgeError::SameOptionToken`], template errors.
    pub fn new(
        format: &'a PromptFormat,
        tokenizer: &'a Tokenizer,
        answer_prefix: &str,
    ) -> Result<Self, JudgeError> {
        let mut p = Self {
            format,
            tokenizer,
            answer_prefix: answer_prefix.to_owned(),
            option_ids: [0, 0],
        };
        let probe = Constitution::neutral_baseline().ok();
        let text = match &probe {
            Some(c) => p.render(
                c,
                crate::constitution::NEUTRAL_QUESTION,
                "Hi.",
                "Hello.",
                "Hey.",
            )?,
            None => p.render_body("Which response is better? (A) Hello. (B) Hey.")?,
        };
        let base = encode(tokenizer, &text);
        for (k, letter) in OPTION_LETTERS.iter().enumerate() {
            let with = encode(tokenizer, &format!("{text}{letter}"));
            let single = with.len() == base.len() + 1 && with[..base.len()] == base[..];
            if !single {
                let common = with.iter().zip(&base).take_while(|(a, b)| a == b).count();
                return Err(JudgeError::OptionNotSingleToken {
                    letter: (*letter).to_owned(),
                    prefix: answer_prefix.to_owned(),
                    pieces: with[common..].to_vec(),
                });
            }
            p.option_ids[k] = with[base.len()];
        }
        if p.option_ids[0] == p.option_ids[1] {
            return Err(JudgeError::SameOptionToken(p.option_ids[0]));
        }
        Ok(p)
    }

    /// Token ids of the letters `A` and `B` as they follow the answer prefix.
    pub fn option_ids(&self) -> [u32; 2] {
        self.option_ids
    }

    /// The answer prefix in force.
    pub fn answer_prefix(&self) -> &str {
        &self.answer_prefix
    }

    /// The full judge prompt text for one principle, with `response_a` shown as (A).
    ///
    /// # Errors
    /// Template errors.
    pub fn render(
        &self,
        constitution: &Constitution,
        principle: &str,
        prompt: &str,
        response_a: &str,
        response_b: &str,
    ) -> Result<String, JudgeError> {
        let body = constitution.render_judge_prompt(
            principle,
            &conversation_text(prompt),
            response_a.trim(),
            response_b.trim(),
        );
        self.render_body(&body)
    }

    fn render_body(&self, body: &str) -> Result<String, JudgeError> {
        let mut text = self.format.render(&[Message::user(body)], true)?;
        text.push_str(&self.answer_prefix);
        Ok(text)
    }

    /// Token ids of the judge prompt for one principle and one order of `(y1, y2)`.
    ///
    /// # Errors
    /// Template errors.
    pub fn tokens(
        &self,
        constitution: &Constitution,
        principle: &str,
        prompt: &str,
        y1: &str,
        y2: &str,
        order: Order,
    ) -> Result<Vec<u32>, JudgeError> {
        let (a, b) = match order {
            Order::FirstAsA => (y1, y2),
            Order::SecondAsA => (y2, y1),
        };
        Ok(encode(
            self.tokenizer,
            &self.render(constitution, principle, prompt, a, b)?,
        ))
    }
}
