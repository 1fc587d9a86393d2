#![no_main]
//! libFuzzer target `tokenizer`: see [`lvh_fuzz::tokenizer`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| lvh_fuzz::tokenizer(data));
