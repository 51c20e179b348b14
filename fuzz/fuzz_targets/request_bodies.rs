//! Fuzz target: `vmseal_verifier::fuzzing::request_bodies` (the verifier's JSON request bodies).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmseal_verifier::fuzzing::request_bodies(data));
