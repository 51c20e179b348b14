//! Fuzz target: `vmseal_sealer::fuzzing::certificate`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmseal_sealer::fuzzing::certificate(data));
