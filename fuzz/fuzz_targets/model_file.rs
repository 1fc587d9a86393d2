#![no_main]
//! libFuzzer target `model_file`: see [`lvh_fuzz::model_file`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| lvh_fuzz::model_file(data));
