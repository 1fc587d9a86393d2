#![no_main]
//! libFuzzer target `control_vector`: see [`lvh_fuzz::control_vector`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| lvh_fuzz::control_vector(data));
