#![no_main]
//! libFuzzer target `datasets`: see [`lvh_fuzz::datasets`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| lvh_fuzz::datasets(data));
