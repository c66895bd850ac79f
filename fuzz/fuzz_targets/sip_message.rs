//! `cargo fuzz run sip_message`: the checks of `call_outcome::fuzzing::sip_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| call_outcome::fuzzing::sip_message(data));
