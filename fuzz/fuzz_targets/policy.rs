//! `cargo fuzz run policy`: the checks of `call_outcome::fuzzing::policy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| call_outcome::fuzzing::policy(data));
