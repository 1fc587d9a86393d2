//! Chat prompts: the model's own Jinja chat template (`tokenizer.chat_template`), rendered by
//! minijinja the way Hugging Face `transformers` renders it, or a documented plain format for base
//! models that ship without one.
//!
//! The template sees what `apply_chat_template` passes: `messages` (a list of `{role, content}`),
//! `add_generation_prompt`, `bos_token`, `eos_token`, and the function `raise_exception(msg)`.
//! As in `transformers`, blocks are trimmed (`trim_blocks`, `lstrip_blocks`), `{% break %}` /
//! `{% continue %}` work, and Python string / dict methods (`.strip()`, `.items()`, …) are available
//! through minijinja-contrib's `pycompat`.
//!
//! A template comes from a model file, so it is treated as untrusted code: each render runs on a
//! fuel budget of [`FUEL`] VM instructions (an endless loop stops with an error), its output is capped
//! at [`MAX_OUTPUT_BYTES`] plus four times the size of the messages, recursion is capped by
//! minijinja (500 levels) and so are `range` (100 000 items) and string repetition (100 MB).
//! Not capped: a template that doubles a string with `~` in a short loop can still allocate
//! exponentially before the output cap sees it.

use std::io;

use candle_core::quantized::gguf_file::{Content, Value as GgufValue};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

/// VM instructions one render may execute. A long real conversation needs a few hundred thousand.
pub const FUEL: u64 = 5_000_000;

/// Output allowed beyond four times the bytes of the messages.
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;

/// Errors compiling or rendering a chat prompt.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("GGUF metadata key `tokenizer.chat_template` is not a string")]
    NotAString,
    #[error("chat template (`tokenizer.chat_template`) does not compile: {0:#}")]
    Compile(minijinja::Error),
    #[error("chat template (`tokenizer.chat_template`) failed to render: {0:#}")]
    Render(minijinja::Error),
    #[error("chat template output exceeds {limit} bytes")]
    OutputTooLarge { limit: usize },
}

/// One turn of a conversation: `role` is `system`, `user` or `assistant` (templates may accept more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
}

/// A compiled-checked Jinja chat template with the model's BOS / EOS token texts.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Checks that `source` compiles and keeps it with the token texts the template may print.
    ///
    /// # Errors
    /// [`TemplateError::Compile`] with minijinja's message (line and column) for a syntax error.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self, TemplateError> {
        let t = Self {
            source: source.into(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        };
        t.environment()
            .template_from_str(&t.source)
            .map_err(TemplateError::Compile)?;
        Ok(t)
    }

    /// The template in `tokenizer.chat_template`, with `bos_token` / `eos_token` taken from the
    /// vocabulary (`tokenizer.ggml.tokens` at `tokenizer.ggml.{bos,eos}_token_id`, empty if absent).
    /// `Ok(None)` when the file has no template (a base model: use [`PromptFormat::Plain`]).
    ///
    /// # Errors
    /// [`TemplateError::NotAString`] if the key has another type; [`TemplateError::Compile`].
    pub fn from_gguf(content: &Content) -> Result<Option<Self>, TemplateError> {
        let source = match content.metadata.get("tokenizer.chat_template") {
            None => return Ok(None),
            Some(GgufValue::String(s)) => s.clone(),
            Some(_) => return Err(TemplateError::NotAString),
        };
        let token_text = |key: &str| -> String {
            let id = match content.metadata.get(key) {
                Some(GgufValue::U32(i)) => *i as usize,
                Some(GgufValue::I32(i)) if *i >= 0 => *i as usize,
                Some(GgufValue::U64(i)) => *i as usize,
                _ => return String::new(),
            };
            match content.metadata.get("tokenizer.ggml.tokens") {
                Some(GgufValue::Array(a)) => match a.get(id) {
                    Some(GgufValue::String(s)) => s.clone(),
                    _ => String::new(),
                },
                _ => String::new(),
            }
        };
        let bos = token_text("tokenizer.ggml.bos_token_id");
        let eos = token_text("tokenizer.ggml.eos_token_id");
        Self::new(source, bos, eos).map(Some)
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; with `add_generation_prompt` the template appends the assistant header.
    ///
    /// # Errors
    /// [`TemplateError::Render`] when the template raises (`raise_exception`), runs out of fuel or
    /// fails otherwise; [`TemplateError::OutputTooLarge`] past the output cap.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let env = self.environment();
        let tmpl = env
            .template_from_str(&self.source)
            .map_err(TemplateError::Compile)?;
        let input: usize = messages
            .iter()
            .map(|m| m.role.len() + m.content.len())
            .sum();
        let limit = MAX_OUTPUT_BYTES.saturating_add(input.saturating_mul(4));
        let mut out = CappedWriter {
            buf: Vec::new(),
            limit,
            overflowed: false,
        };
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        let result = tmpl.render_captured_to(ctx, &mut out).map(drop);
        if out.overflowed {
            return Err(TemplateError::OutputTooLarge { limit });
        }
        result.map_err(TemplateError::Render)?;
        // The writer only ever receives `&str` output from minijinja.
        String::from_utf8(out.buf).map_err(|e| {
            TemplateError::Render(minijinja::Error::new(
                ErrorKind::BadSerialization,
                format!("template output is not UTF-8: {e}"),
            ))
        })
    }

    fn environment(&self) -> Environment<'_> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env
    }
}

/// How a conversation becomes the prompt text the tokenizer sees.
#[derive(Debug, Clone)]
pub enum PromptFormat {
    /// The model's own chat template.
    Template(ChatTemplate),
    /// For models without a template: each message on its own line as `Role: content` with the
    /// role capitalised (`System`, `User`, `Assistant`), and with a generation prompt a final
    /// `Assistant:` with no trailing space or newline. One user turn renders as
    /// `"User: {content}\nAssistant:"`. BOS is not written; the tokenizer adds it when the model asks.
    Plain,
}

impl PromptFormat {
    /// The template of the file, or [`PromptFormat::Plain`] when it has none.
    ///
    /// # Errors
    /// As [`ChatTemplate::from_gguf`].
    pub fn from_gguf(content: &Content) -> Result<Self, TemplateError> {
        Ok(ChatTemplate::from_gguf(content)?.map_or(Self::Plain, Self::Template))
    }

    /// Renders `messages` (see the variants for the format).
    ///
    /// # Errors
    /// As [`ChatTemplate::render`]; the plain format does not fail.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        match self {
            Self::Template(t) => t.render(messages, add_generation_prompt),
            Self::Plain => Ok(render_plain(messages, add_generation_prompt)),
        }
    }
}

fn render_plain(messages: &[Message], add_generation_prompt: bool) -> String {
    let mut s = String::new();
    for m in messages {
        let mut role = m.role.chars();
        if let Some(first) = role.next() {
            s.extend(first.to_uppercase());
            s.push_str(role.as_str());
        }
        s.push_str(": ");
        s.push_str(&m.content);
        s.push('\n');
    }
    if add_generation_prompt {
        s.push_str("Assistant:");
    }
    s
}

/// Collects output and refuses writes past `limit`, which aborts the render.
struct CappedWriter {
    buf: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.overflowed = true;
            return Err(io::Error::other("chat template output too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_format_is_as_documented() {
        let s = render_plain(&[Message::user("Hi there")], true);
        assert_eq!(s, "User: Hi there\nAssistant:");
        let s = render_plain(
            &[
                Message::system("Be brief."),
                Message::user("Q"),
                Message::assistant("A"),
            ],
            false,
        );
        assert_eq!(s, "System: Be brief.\nUser: Q\nAssistant: A\n");
    }

    #[test]
    fn pycompat_and_trim_blocks_apply() {
        // Python's jinja2 with trim_blocks + lstrip_blocks renders this to "USER=x;\n" too.
        let t = ChatTemplate::new(
            "{% for m in messages %}\n    {% if m.role %}\n{{ m.role.upper() }}={{ m.content.strip() }};\n    {% endif %}\n{% endfor %}",
            "<s>",
            "</s>",
        )
        .unwrap();
        let s = t.render(&[Message::user("  x  ")], false).unwrap();
        assert_eq!(s, "USER=x;\n");
    }

    #[test]
    fn syntax_error_is_reported_at_construction() {
        let e = ChatTemplate::new("{% for m in messages %}", "", "").unwrap_err();
        assert!(matches!(e, TemplateError::Compile(_)), "{e}");
    }
}
