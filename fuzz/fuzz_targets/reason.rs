//! `cargo fuzz run reason`: the checks of `call_outcome::fuzzing::reason`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| call_outcome::fuzzing::reason(data));
