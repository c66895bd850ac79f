//! `cargo fuzz run config`: the checks of `call_outcome::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| call_outcome::fuzzing::config(data));
