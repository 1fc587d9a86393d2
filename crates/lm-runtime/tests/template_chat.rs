//! Chat templates render exactly what Python's jinja2 (the engine `transformers` uses) renders, and
//! hostile templates fail fast instead of looping or filling memory.

use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file::Content;
use lm_runtime::template::{ChatTemplate, Message, PromptFormat, TemplateError};

/// `tokenizer.chat_template` of SmolLM2-135M-Instruct (Apache-2.0), as stored in its GGUF file.
const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// What jinja2 3.1 (`Environment(trim_blocks=True, lstrip_blocks=True)`) renders for one user turn
/// with the generation prompt: the template inserts its default system prompt.
const SMOLLM2_USER_TURN: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n";

fn smollm2() -> ChatTemplate {
    ChatTemplate::new(SMOLLM2_TEMPLATE, "<|im_start|>", "<|im_end|>").unwrap()
}

#[test]
fn smollm2_user_turn_with_generation_prompt() {
    let s = smollm2()
        .render(&[Message::user("What is 2+2?")], true)
        .unwrap();
    assert_eq!(s, SMOLLM2_USER_TURN);
}

#[test]
fn smollm2_explicit_system_prompt_replaces_the_default() {
    let msgs = [
        Message::system("Be brief."),
        Message::user("Hi"),
        Message::assistant("Hello!"),
    ];
    let s = smollm2().render(&msgs, false).unwrap();
    // jinja2 3.1 output for the same input.
    assert_eq!(
        s,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    );
}

#[test]
fn raise_exception_surfaces_the_message() {
    let t = ChatTemplate::new(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with a user turn') }}{% endif %}ok",
        "",
        "",
    )
    .unwrap();
    assert_eq!(t.render(&[Message::user("x")], false).unwrap(), "ok");
    let e = t.render(&[Message::assistant("x")], false).unwrap_err();
    assert!(matches!(e, TemplateError::Render(_)));
    assert!(e.to_string().contains("must start with a user turn"), "{e}");
}

#[test]
fn bos_and_eos_tokens_are_visible() {
    let t = ChatTemplate::new(
        "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}",
        "<s>",
        "</s>",
    )
    .unwrap();
    assert_eq!(t.render(&[Message::user("x")], false).unwrap(), "<s>x</s>");
}

fn fails_fast(source: &str) -> TemplateError {
    let t = ChatTemplate::new(source, "", "").unwrap();
    let start = Instant::now();
    let e = t.render(&[Message::user("hi")], true).unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    e
}

#[test]
fn endless_loop_runs_out_of_fuel() {
    // 10^10 iterations: only the fuel budget stops it.
    let e = fails_fast(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% set x = i + j %}{% endfor %}{% endfor %}",
    );
    assert!(matches!(e, TemplateError::Render(_)), "{e}");
    assert!(e.to_string().contains("fuel"), "{e}");
}

#[test]
fn unbounded_recursion_is_stopped() {
    let e = fails_fast("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
    assert!(matches!(e, TemplateError::Render(_)), "{e}");
}

#[test]
fn huge_output_is_refused() {
    // 10^5 x 10^5 bytes = 10 GB of output if nothing stopped it.
    let e = fails_fast("{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}");
    assert!(matches!(e, TemplateError::OutputTooLarge { .. }), "{e}");
}

#[test]
fn plain_format_for_models_without_template() {
    let s = PromptFormat::Plain
        .render(&[Message::user("Name a colour.")], true)
        .unwrap();
    assert_eq!(s, "User: Name a colour.\nAssistant:");
}

/// With the real files (`LVH_TEST_MODEL`, `LVH_TEST_GEMMA`): SmolLM2's stored template gives the jinja2 string; Gemma 3 270M (base) has
/// no template and falls back to the plain format.
#[test]
fn templates_from_real_gguf_files() {
    let paths: Vec<std::path::PathBuf> = ["LVH_TEST_MODEL", "LVH_TEST_GEMMA"]
        .iter()
        .filter_map(std::env::var_os)
        .filter(|p| !p.is_empty())
        .map(Into::into)
        .collect();
    if paths.is_empty() {
        eprintln!(
            "skipped: set LVH_TEST_MODEL (SmolLM2) and/or LVH_TEST_GEMMA (Gemma 3) to GGUF paths"
        );
        return;
    }
    for path in paths {
        let mut f = std::fs::File::open(&path).unwrap();
        let content = Content::read(&mut f).unwrap();
        let arch = content.metadata["general.architecture"]
            .to_string()
            .unwrap()
            .clone();
        let format = PromptFormat::from_gguf(&content).unwrap();
        match (arch.as_str(), &format) {
            ("llama", PromptFormat::Template(t)) => {
                assert_eq!(t.source(), SMOLLM2_TEMPLATE);
                let s = format
                    .render(&[Message::user("What is 2+2?")], true)
                    .unwrap();
                assert_eq!(s, SMOLLM2_USER_TURN);
            }
            ("gemma3", PromptFormat::Plain) => {}
            (a, f) => panic!("{}: unexpected {a} with {f:?}", path.display()),
        }
        eprintln!("checked {} ({arch})", path.display());
    }
}
