#![no_main]
//! libFuzzer target `gguf`: see [`lvh_fuzz::gguf`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| lvh_fuzz::gguf(data));
