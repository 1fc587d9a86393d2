#![no_main]
//! libFuzzer target `template`: see [`lvh_fuzz::template`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| lvh_fuzz::template(data));
