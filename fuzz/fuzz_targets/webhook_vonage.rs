//! `cargo fuzz run webhook_vonage`: the checks of `call_outcome::fuzzing::webhook_vonage`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| call_outcome::fuzzing::webhook_vonage(data));
