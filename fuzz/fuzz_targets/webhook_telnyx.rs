//! `cargo fuzz run webhook_telnyx`: the checks of `call_outcome::fuzzing::webhook_telnyx`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| call_outcome::fuzzing::webhook_telnyx(data));
