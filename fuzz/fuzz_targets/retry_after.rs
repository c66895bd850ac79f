//! `cargo fuzz run retry_after`: the checks of `call_outcome::fuzzing::retry_after`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| call_outcome::fuzzing::retry_after(data));
