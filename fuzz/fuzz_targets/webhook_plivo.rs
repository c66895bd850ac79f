//! `cargo fuzz run webhook_plivo`: the checks of `call_outcome::fuzzing::webhook_plivo`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| call_outcome::fuzzing::webhook_plivo(data));
