//! Fuzz target: `vmseal_sealer::fuzzing::snp`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmseal_sealer::fuzzing::snp(data));
