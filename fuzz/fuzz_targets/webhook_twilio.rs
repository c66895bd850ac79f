//! `cargo fuzz run webhook_twilio`: the checks of `call_outcome::fuzzing::webhook_twilio`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| call_outcome::fuzzing::webhook_twilio(data));
