#![no_main]
//! libFuzzer target `constitution`: see [`lvh_fuzz::constitution`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| lvh_fuzz::constitution(data));
